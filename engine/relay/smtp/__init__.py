"""Receiving mail: the SMTP protocol (`protocol`), the handler that answers it (`edge`),
what happens to an accepted message (`intake`) and the values they pass (`message`)."""
