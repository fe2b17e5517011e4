"""The only package that talks to the network: download, upload, poll, scores, and the ledger of what was sent.

`submit.submit_file` is the one road from a CSV to a platform; `kaggle` and `codabench` are its backends; `fetch`
downloads a competition; `ledger` records what was sent and how it scored.
"""
