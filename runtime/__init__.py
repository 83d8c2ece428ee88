"""caeav.runtime"""
