"""Training: the phases from a catalogue to a saved model (`train`), fine-tuning the whole photo
network (`whole_network`) and the figures that measure a model (`metrics`)."""
