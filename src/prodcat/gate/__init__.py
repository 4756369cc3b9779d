"""The gate: calibrated confidence (`calibration`), out-of-distribution signals (`ood`) and the
decisions accept / review / unknown per modality case (`gate`)."""
