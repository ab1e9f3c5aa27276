"""The web UI served by the frontend on the API port (``/`` and ``/ui/`` redirect to the workflows of
the ``default`` namespace).

``data.py`` is the UI's only way to the data (the frontend's handlers, in process, under the
API's authorization); ``timeline.py`` lays out a run's history; ``web.py`` renders the pages
and takes the actions. Templates and static assets ship inside this package.
"""

from .data import Feature, UiData, detect
from .web import Ui, UiSettings, install_ui

__all__ = ["Feature", "Ui", "UiData", "UiSettings", "detect", "install_ui"]
