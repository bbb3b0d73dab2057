"""The parity matrix across CI runners (``gatex matrix``): the matrix file (`spec`), the plan
over runner kinds and shards (`plan`), running a shard (`run`), one verdict from every shard
with ratcheting baselines (`merge`). The engine for scale is the CI system's own matrix jobs;
this package only says what each job runs and gathers what they wrote."""
