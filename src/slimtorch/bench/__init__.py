"""MLPerf-style benchmarking: LoadGen scenarios, accuracy mode, divisions, LLM metrics, reports."""
