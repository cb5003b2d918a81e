"""Cricket: finds the anomalous metric waveforms that hosts and devices write to InfluxDB.

Learns a library of normal waveform shapes with k-means and flags what it cannot
rebuild from them. This package is the library; it never imports Prefect.
"""

__version__ = "0.1.0"
