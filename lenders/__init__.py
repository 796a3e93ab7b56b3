"""The lending book: staff and roles, borrowers, loans, schedules, repayments, audit."""
