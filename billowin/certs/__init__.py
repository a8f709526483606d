"""Certificates for HTTPS: ordered from an ACME CA, kept once in the cluster's store.

    store.py     ``ConsulCertificateStore``: records, chains, keys and the ACME account in
                 Consul KV under ``billowin/certs/`` (the ``CertificateStore`` port)
    http01.py    ``Http01Responder``: pending HTTP-01 answers under ``billowin/acme-challenges/``,
                 held by a Consul session so they vanish by themselves; the API serves them at
                 ``GET /.well-known/acme-challenge/{token}``
    service.py   ``Certificates.issue(names)``: account, key, order, store; failures recorded
                 with a plain reason and an exponential back-off; ``due_for_renewal``
    manager.py   ``CertificateManager``: the API's thread that orders what every app and custom
                 domain is missing or is due, one Consul lock per certificate

The CA itself is an adapter (``billowin.adapters.acme``, around certbot's ``acme`` library), and
so is DNS-01 by RFC 2136 dynamic updates (``billowin.adapters.rfc2136``); ``billowin.system``
wires them together.
"""
