"""The drift alarm: is a batch of products (or the API's recent requests) unlike the validation
part the model's thresholds were chosen on?

Works on plain arrays (decisions, confidences, OOD scores, predicted class indices, which
modalities each product has, photo sizes), so the model bundle saves its reference, `prodcat
monitor` compares a catalogue with it and the API compares its rolling window of requests, all
with the same tests. `observations` holds the arrays, `reference` the small summary a model stores
at training, `drift` the tests and the verdict, `window` the API's bounded window.
"""

from prodcat.monitor.drift import DEFAULT_ALPHA, DriftReport, compare
from prodcat.monitor.observations import Observations, photo_side
from prodcat.monitor.reference import Reference
from prodcat.monitor.window import RollingWindow

__all__ = [
    "DEFAULT_ALPHA",
    "DriftReport",
    "Observations",
    "Reference",
    "RollingWindow",
    "compare",
    "photo_side",
]
