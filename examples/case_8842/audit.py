"""The audit trail of case 8842, as plain SQL over the durable tier's tables.

Every statement names the saver's schema as `{schema}` (filled in with `psycopg.sql.Identifier`)
and takes the thread as the bind parameter `%(thread_id)s`. None of them filters on `tenant_id`:
row-level security does that. Run them in a transaction that first sets the tenant with
`SET_TENANT`, connected as the application role (NOSUPERUSER, NOBYPASSRLS), and another tenant
sees no rows at all.

How the tables answer "who changed what, and when":

- `checkpoint_writes` holds what each task wrote (`channel`, a readable JSON copy in `value`).
  `task_path` names the task (`~__pregel_pull, billing_agent`); an empty path is input given with
  `Command(resume=...)`, i.e. the human reviewer. Subgraph writes carry their parent node in
  `checkpoint_ns` (`account_agent:<task id>`).
- A write is keyed by the checkpoint its step *started from*; the step that made it is that
  checkpoint's `step + 1`, and the checkpoint whose `parent_checkpoint_id` is that one was saved
  when the step finished: its `created_at` is when the change became state.
- `checkpoint_writes.created_at` is when the row reached Postgres (the flush), not when the task
  wrote it. It is used for an interrupt (flushed synchronously when the run pauses, so it is
  when the question was asked: the checkpoint after it only comes once a human answered) and for
  writes no later checkpoint records yet. Special writes (interrupt, resume: `idx < 0`) sort
  first among writes of the same moment, so the human's answer precedes the decision it caused.
"""

from __future__ import annotations

SET_TENANT = "SELECT set_config('app.tenant_id', %(tenant_id)s, true)"
"""Transaction-local tenant for the RLS policy (works behind PgBouncer transaction pooling)."""

ROW_COUNTS = """
SELECT
    (SELECT count(*) FROM {schema}.checkpoints WHERE thread_id = %(thread_id)s) AS checkpoints,
    (SELECT count(*) FROM {schema}.checkpoint_blobs WHERE thread_id = %(thread_id)s) AS blobs,
    (SELECT count(*) FROM {schema}.checkpoint_writes WHERE thread_id = %(thread_id)s) AS writes
"""

AUDIT_TRAIL = """
SELECT
    coalesce(done.created_at, w.created_at) AS at,
    c.step + 1 AS step,
    c.source,
    CASE WHEN w.task_path = '' THEN 'human reviewer'
         ELSE concat_ws('/', nullif(split_part(w.checkpoint_ns, ':', 1), ''),
                        split_part(w.task_path, ', ', 2))
    END AS node,
    w.channel,
    left(coalesce(w.value::text, w.type), 48) AS what
FROM {schema}.checkpoint_writes AS w
JOIN {schema}.checkpoints AS c USING (tenant_id, thread_id, checkpoint_ns, checkpoint_id)
LEFT JOIN LATERAL (
    SELECT n.created_at
    FROM {schema}.checkpoints AS n
    WHERE n.tenant_id = w.tenant_id AND n.thread_id = w.thread_id
      AND n.checkpoint_ns = w.checkpoint_ns AND n.parent_checkpoint_id = w.checkpoint_id
    ORDER BY n.checkpoint_id
    LIMIT 1
) AS done ON w.channel <> '__interrupt__'
WHERE w.thread_id = %(thread_id)s
  AND w.channel !~ '^(branch|join):'
  AND NOT (w.channel = '__resume__' AND w.task_path <> '')
ORDER BY at, w.checkpoint_ns DESC, w.idx >= 0, node, w.idx
"""
"""Every state change of the thread: when, in which step, by which node (or the human), what.

Routing channels (`branch:*`, `join:*`) are left out, and so is the copy of the resume value
that LangGraph also files under the policy task."""

POLICY_DECISIONS = """
SELECT
    coalesce(done.created_at, w.created_at) AS at,
    c.step + 1 AS step,
    w.value ->> 'decision' AS decision,
    w.value ->> 'approver' AS approver,
    (w.value ->> 'amount')::numeric AS amount,
    w.value ->> 'note' AS note,
    w.value -> 'refund' ->> 'refund_id' AS refund_id
FROM {schema}.checkpoint_writes AS w
JOIN {schema}.checkpoints AS c USING (tenant_id, thread_id, checkpoint_ns, checkpoint_id)
LEFT JOIN LATERAL (
    SELECT n.created_at
    FROM {schema}.checkpoints AS n
    WHERE n.tenant_id = w.tenant_id AND n.thread_id = w.thread_id
      AND n.checkpoint_ns = w.checkpoint_ns AND n.parent_checkpoint_id = w.checkpoint_id
    ORDER BY n.checkpoint_id
    LIMIT 1
) AS done ON true
WHERE w.thread_id = %(thread_id)s AND w.channel = 'policy'
ORDER BY at
"""
"""The refund decisions of the thread, with who took them (`policy` or `human`) and why."""

REVOKE_APP_ROLE = """
REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {role};
REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {role};
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {schema} FROM {role};
REVOKE USAGE ON SCHEMA {schema} FROM {role}
"""
DROP_APP_ROLE = "DROP ROLE IF EXISTS {role}"

CURRENT_ROLE = """
SELECT current_user::text, rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user
"""
"""Who a connection runs as, and whether RLS binds it (superusers and BYPASSRLS roles escape)."""
