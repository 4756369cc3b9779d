"""The static HTML report (`html`) with its gate sections (`gate_sections`)."""
