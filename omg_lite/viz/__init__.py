"""Plotting helpers the notebooks share (matplotlib for images, plotly for 3D, ipywidgets).

One module per topic; notebooks import from here so that they stay thin.
"""


def finish(fig, image_axes=(), title: str | None = None):
    """Hide the frames of image panels, add the figure title, tighten the layout -> ``fig``."""
    for ax in image_axes:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
