"""A local Daraja for development, tests and the demo, never imported by production code
(a test walks every other module's imports to keep it so).

- ``server``: the emulator as a Flask app (``create_emulator``) and ``serve``;
- ``gateway``: what stands before every API (error shape, gateway faults, call records);
- ``oauth``, ``c2b``, ``stk``, ``b2c``, ``status``, ``balance``, ``reversal``, ``pull``: one
  module per Daraja API family, its endpoints and what happens after Daraja accepts;
- ``initiator``: what B2C, status, balance and reversal share;
- ``state``, ``settings``, ``faults``, ``tokens``, ``courier``, ``payloads``: its M-Pesa
  (with the ledger of every movement of money), configuration, fault switches, issued
  tokens, callback deliveries and body shapes;
- ``statement``: the org portal's statement of a shortcode, read from the ledger;
- ``control``: the ``/_emulator`` endpoints (an index, faults, certificate, calls,
  deliveries, the demo traffic's payments, the statement);
- ``demo_traffic``: payments to the demo paybill through the emulator, so ``make run``
  shows payments;
- ``cli``: ``flask emulator serve`` and ``flask emulator demo-traffic``, registered through
  the ``flask.commands`` entry point in pyproject.toml (``app.py`` never names them).

Nothing is imported here, so that the CLI group loads without Flask apps being built."""
