"""Every file staff read: the report (the only JSON writer), the gradebook, the class summary."""
