"""python -m simulate.report SUMMARY_JSON [REPORT_HTML]: render the report of an earlier run."""

import json
import sys
from pathlib import Path

from simulate.report import write_report

source = Path(sys.argv[1])
target = Path(sys.argv[2]) if len(sys.argv) > 2 else source.with_suffix(".html")
print(write_report(json.loads(source.read_text()), target))
