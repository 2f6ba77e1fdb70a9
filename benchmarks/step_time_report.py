"""The targets and markdown tables of `step_time.py`'s results."""

from step_time_networks import LABEL

TARGETS = {"memory_linear_over_identity": 1.05, "time_linear_over_identity": 1.05, "model_over_layers": 1.02}


def targets(results):
    """The targets of issue 11, measured (not tuned)."""
    gelu = [case for case in results["memory"] + results["device_memory"] if case["model"] == "mlp_gelu"]
    rows = []
    for case in gelu:
        rows.append(
            {
                "target": "GELU memory: linear_model <= 1.05x identity",
                "where": f"{case['metric']} jit_compile={case['jit_compile']}",
                "value": case["linear_over_identity"],
                "limit": TARGETS["memory_linear_over_identity"],
            }
        )
    for case in results["cases"]:
        where = f"{case['model']} jit_compile={case['jit_compile']}"
        rows.append(
            {
                "target": "step time: linear_model <= 1.05x identity",
                "where": where,
                "value": case["linear_over_identity"],
                "limit": TARGETS["time_linear_over_identity"],
            }
        )
        rows.append(
            {
                "target": "step time: LinearBackpropModel <= 1.02x hand-placed layers",
                "where": where,
                "value": case["model_over_layers"],
                "limit": TARGETS["model_over_layers"],
            }
        )
    for row in rows:
        row["met"] = row["value"] is not None and row["value"] <= row["limit"]
    return rows


def _fmt(value, digits):
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(results):
    backend = results["backend"]
    config = results["config"]
    lines = [
        f"#### {backend} ({config['device']}; {'wall' if config['on_gpu'] else 'CPU'} ms per step)",
        "",
        "| model | jit | exact ms | linear_model ms | linear_layers ms | identity ms "
        "| linear/exact | model/layers | linear/identity |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case in results["cases"]:
        ms = case["ms_per_step"]
        lines.append(
            f"| {LABEL[case['model']]} | {case['jit_compile']} | {ms['exact']:.2f} | "
            f"{ms['linear_model']:.2f} | {ms['linear_layers']:.2f} | {ms['identity']:.2f} | "
            f"{case['linear_over_exact']:.3f} | {case['model_over_layers']:.3f} | "
            f"{case['linear_over_identity']:.3f} |"
        )
    lines += [
        "",
        "| model | jit | memory | exact MiB | linear_model MiB | linear_layers MiB | identity MiB "
        "| linear/exact | linear/identity |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case in results["memory"] + results["device_memory"]:
        mib = case["mib"]
        lines.append(
            f"| {LABEL[case['model']]} | {case['jit_compile']} | "
            f"{case['metric']}{' (upper bound)' if case.get('upper_bound') else ''} | "
            f"{mib['exact']:.1f} | {mib['linear_model']:.1f} | {mib['linear_layers']:.1f} | "
            f"{mib['identity']:.1f} | {_fmt(case['linear_over_exact'], 2)} | "
            f"{_fmt(case['linear_over_identity'], 3)} |"
        )
    missed = [row for row in results["targets"] if not row["met"]]
    if not results.get("complete", True):
        lines += ["", "(incomplete run: cut short before every case was measured)"]
    lines += [
        "",
        f"Targets: {len(results['targets']) - len(missed)} of {len(results['targets'])} met"
        + ("." if not missed else "; missed:"),
    ]
    for row in missed:
        lines.append(f"- {row['target']}, {row['where']}: {_fmt(row['value'], 3)}")
    for error in results.get("errors", []):
        lines.append(f"- not measured: {error}")
    return "\n".join(lines) + "\n"

