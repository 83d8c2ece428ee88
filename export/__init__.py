"""caeav.export"""
