"""What the data says: revenue metrics (MRR waterfall, GRR, NRR), outcomes and their attribution
to enrollments, lift against the holdout, survey scores and health scores. Plain functions over
SQL; nothing here imports Prefect."""
