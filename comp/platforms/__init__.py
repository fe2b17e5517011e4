"""The only package that talks to the network: download, upload, poll, scores (recorded in comp.submission.ledger).

`submit.submit_file` is the one road from a CSV to a platform; `kaggle` and `codabench` are its backends; `fetch`
downloads a competition.
"""
