"""The model: the saved bundle (`bundle`: encoders, head, gate, taxonomy), the in-memory prediction
path every interface shares (`predictor`) and the predictions file (`predictions_file`)."""
