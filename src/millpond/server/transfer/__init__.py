"""Import and export jobs.

Pure modules (no database, no network): ``names`` (identifiers), ``infer`` (column
types), ``sniff`` (encodings, CSV dialects, headers), ``sources`` (reading every import
format into rows), ``sinks`` (writing every export format). Around them: ``fetch``
(downloading a ``file_url`` safely), ``upload`` (streaming a multipart body to disk),
``loader`` and ``exporter`` (running one job against a user database as the caller's
role), ``jobs`` (job rows in the control database), ``worker`` (claiming and running
jobs on every replica), ``service`` (the API's operations), ``stream`` (streamed CSV
exports: no job, the answer is the file) and ``router``.
"""
