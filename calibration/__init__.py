"""caeav.calibration"""
