"""Keras callbacks: backprop schedules and TensorBoard inspection."""

from keras_linbp.callbacks.gradient_flow import GradientFlow
from keras_linbp.callbacks.saturation import SaturationHistograms
from keras_linbp.callbacks.schedule import BackpropSchedule
