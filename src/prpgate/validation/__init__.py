"""``prpgate validate``: checks over sample feeds, their report, expectations, coverage."""
