"""The campaign job: state from the database, core.policy.decide, touches into the outbox.

Deciding and delivering are separate steps joined by the `touch` table (the outbox): all of a
policy's decisions for a day are written in one transaction, and delivery (services/delivery.py)
only ever works from rows. A crash after deciding leaves queued rows that the next run delivers;
deciding again the same day inserts nothing new (unique (policy, user, day, step)); and a lock
row keeps two runs for one tenant from overlapping.

The rooms, in the order a decision flows through them:

* `population` — the users a policy decides over, from the score snapshot and the user table;
  `history` (their past touches) and `allowances` (subscribe sends left) feed it;
* `learnt` — what the policy has learnt from its finished touches (bandit, stop-loss);
* `outbox` — decisions as touch rows, written once;
* `job` — the nightly run (with `run_lock`, its renewed tenant lock, and `summary`, what a
  run or a dry run reports); `triggers` — decisions when an event arrives; `preview` — a dry
  run of one policy for the admin.
"""
