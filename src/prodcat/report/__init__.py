"""The static HTML report: `html.write_report` writes the page from its sections (`sections`,
`class_sections`, `gate_sections`), all built from `elements`."""
