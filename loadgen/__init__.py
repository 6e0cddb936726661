"""The load generator users run against any deployment: `python -m loadgen --help`.

It speaks the course's protocol (multipart field `myfile`, plain-text `stem:label` replies), so
the same command measures the course servers and this service. Only the standard library's
http.client talks HTTP; tqdm draws the progress bar and matplotlib (imported only for `--out`)
draws the report.
"""
