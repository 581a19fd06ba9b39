"""Content review: normalise, match operator term lists, ask an optional classifier; fail closed."""
