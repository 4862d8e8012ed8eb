"""Prove an install works: run (plan, start the offline worker, judge), worker, segment, assets/."""
