"""``detkit doctor DATA``: a dataset's health report (tables, report.json, plots)."""

from __future__ import annotations

import typer
from rich.markup import escape

from detkit.cli.app import console, err_console, warn
from detkit.cli._command import register
from detkit.cli._display import print_line, text_table
from detkit.commands.doctor import DoctorResult, Options, run
from detkit.doctor.findings import FATAL, WARNING
from detkit.doctor.tables import anchor_lines, report_tables
from detkit.tables import plural


def _render(result: DoctorResult) -> None:
    report = result.report
    dataset = report["dataset"]
    read = f"{dataset['read']}, " if "read" in dataset else ""
    print_line(f"doctor: {dataset['path']} ({read}{dataset['format']}, "
               f"{plural(dataset['num_classes'], 'class')})")
    for table in report_tables(report):
        console.print(text_table(table))
    for line in anchor_lines(report):
        print_line(line)
    for finding in result.findings:
        if finding.level == FATAL:
            err_console.print(f"[bold red]fatal:[/] {escape(finding.message)}",
                              highlight=False, soft_wrap=True)
        elif finding.level == WARNING:
            warn(finding.message)
        else:
            print_line(f"note: {finding.message}")
    if result.plots_note:
        print_line(result.plots_note)
    plots = f" and {len(result.plots)} plots" if result.plots else ""
    print_line(f"wrote {result.report_path}{plots}")
    if result.fatal:
        raise typer.Exit(1)


register("doctor", Options, run, _render)
