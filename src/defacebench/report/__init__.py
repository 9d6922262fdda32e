"""The self-contained HTML report of a study: the page (:mod:`.page`), its sections
(:mod:`.sections`), the generated findings (:mod:`.findings`), embedded figures
(:mod:`.embed`), formatting helpers (:mod:`.formatting`) and the template (:mod:`.template`).

The report reads only files earlier stages wrote; it imports no other stage.
"""
