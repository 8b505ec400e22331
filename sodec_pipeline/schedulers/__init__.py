from .scheduling_sodec import SODECScheduler, SODECSchedulerOutput


__all__ = ["SODECScheduler", "SODECSchedulerOutput"]
