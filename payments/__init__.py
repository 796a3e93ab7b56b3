"""M-Pesa: callbacks, matching, processing jobs, Daraja client and emulator, statements, SMS."""
