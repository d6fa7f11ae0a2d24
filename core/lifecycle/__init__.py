"""A prediction's life cycle, as the site and the workers both follow it.

    upload ─> queued ─> running ─> done
                ^          │
                │          └─> failed ─(an administrator's retry)─┐
                └──── RQ's retry, the sweep of lost jobs ─────────┘

The site records an upload as queued, commits it, then enqueues its job; a
worker marks it running, asks Serving, and writes done or failed once. A
record always names the job meant to answer it (`jobs.job_id`): the sweep
finds records whose job never reached Redis or was lost, and requeues them;
an administrator requeues failed ones. Both go through `requeue`, which
claims records with a guarded UPDATE so a record finished meanwhile is never
reopened, and which runs under the sweep lock so the two never queue one
record twice.

    status       the statuses and which of them are finished
    jobs         job ids, chunks, enqueue, forget, whether a job is alive
    connections  the database, image store, Redis, the two queues (single
                 uploads, served first, and batch chunks) and Serving client
                 of one process
    requeue      the sweep lock and the one guarded claim-and-requeue

Free of Flask and TensorFlow: the site, the workers and the tests import it.
"""
