"""Plotting helpers the notebooks share (matplotlib for images, plotly for 3D, ipywidgets).

One module per topic; notebooks import from here so that they stay thin.
"""
