"""Carrying out decisions in the background: dispatcher threads send due restarts, the
reconciler finds failures whose callbacks were lost. Both work on `app.runtime.Runtime`."""

from app.dispatcher.background import Background, start_background
from app.dispatcher.dispatcher import Dispatcher
from app.dispatcher.reconciler import Reconciler

__all__ = ["Background", "Dispatcher", "Reconciler", "start_background"]
