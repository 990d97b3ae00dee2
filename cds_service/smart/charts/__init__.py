"""Server-side SVG trend charts: model (what is drawn), scales, svg (rendering), panels (from the engine
result and the knowledge base) and text (the text alternative of each chart)."""
