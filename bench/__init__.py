"""Side-by-side delivery benchmark: a private Postfix instance and Kirim, both relaying to
Postfix's ``smtp-sink`` on loopback. Run with ``python -m bench``."""
