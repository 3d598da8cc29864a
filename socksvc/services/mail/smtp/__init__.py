"""
The smtp service: an ESMTP sink on twisted.mail that files every message it
accepts into Maildir and never relays (L{socksvc.services.mail.smtp.service}).
"""
