"""A browsable HTML gallery of any dataset the project writes (``vmarket browse``): ``collect`` reads a dataset into
a plain model of identities and items (``model``), ``page`` writes the static page and its thumbnails, ``figure``
draws a few source | donor | result rows as one PNG."""
