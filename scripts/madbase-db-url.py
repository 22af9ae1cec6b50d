#!/usr/bin/env python3
"""Prints the managed cluster's superuser URL from `madbase start`'s output (a file).

Off a terminal MadBase prints the URL without the password and names the 0600 file that holds it
(`DB URL: postgres://postgres@127.0.0.1:54322/postgres (password in .madbase/superuser.password)`);
scripts that need psql access put the two together here.
"""
import re
import sys
import urllib.parse

output = open(sys.argv[1], encoding="utf-8", errors="replace").read()
found = re.search(r"DB URL: (postgres://\S+) \(password in (\S+)\)", output)
if not found:
    sys.exit(f"{sys.argv[0]}: no managed DB URL in {sys.argv[1]}")
url = urllib.parse.urlsplit(found.group(1))
password = urllib.parse.quote(open(found.group(2), encoding="utf-8").read().strip(), safe="")
netloc = f"{url.username}:{password}@{url.hostname}:{url.port}"
print(urllib.parse.urlunsplit((url.scheme, netloc, url.path, url.query, url.fragment)))
