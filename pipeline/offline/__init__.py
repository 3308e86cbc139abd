"""The offline side: backtests in event time (``backtest``), their scoring against labels (``evaluation``),
the report (``report``) and the robustness matrix (``robustness``).
"""
