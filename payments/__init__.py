"""M-Pesa: callbacks, matching, processing jobs, the Daraja client (`daraja/`), statements,
SMS; and, never imported by the rest, the local Daraja emulator (`emulator/`)."""
