"""The ward page: a central station in the browser, served by the daemon (``[web]``).

``passwords`` hashes and checks the users' passwords (scrypt, standard library only);
``sessions`` holds logins and their CSRF tokens; ``i18n`` every text of the page in
English and French; ``server`` the aiohttp application, its server-sent events and the
acknowledgement from the page; ``probes`` the health probes' HTTP server
(``[health] port``). The assets (``static/``, ``templates/``) ship in the
package: the ward network is closed, so nothing is fetched from outside.
"""
