"""Scheduled jobs for ``rq cron payments.rq_cron`` (with REDIS_URL set)."""

from rq import cron

from payments.jobs import QUEUE, sweep_queued_messages, sweep_received_payments

# Every minute, payments still in "received" go back on the queue.
cron.register(sweep_received_payments, queue_name=QUEUE, interval=60)
cron.register(sweep_queued_messages, queue_name=QUEUE, interval=60)
