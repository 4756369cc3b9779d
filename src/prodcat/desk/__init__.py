"""The review desk: a web app where people confirm or correct what the model was unsure of."""
