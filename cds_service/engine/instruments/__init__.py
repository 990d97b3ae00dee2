"""One module per published instrument; each is a pure function of the evaluation Context."""
