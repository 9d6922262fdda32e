"""defacebench: how much do MRI defacing algorithms change what a 3D CNN learns about age?"""

__version__ = "0.1.0"
