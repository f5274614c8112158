"""Check the documentation site in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`, via Selenium).

    python docs/check.py [_docs] [--self-test] [--shot PAGE#ID=FILE ...]

The site is served from a local server on 127.0.0.1. The browser resolves no other host (`--host-resolver-rules`), so a page
that asks for anything elsewhere fails here rather than fetch it; each such request is reported all the same. For each page
listed in `pages.json` (written by `docs/build.py`: the home page and one page per notebook) it asserts:

* no console error and no failed request (a load error, or an HTTP status of 400 or more);
* no request to any host but the local server;
* every `<img>` decoded (naturalWidth > 0); every figure the notebook makes on its page (a `<figure>` with the id that
  `pages.json` names, its image decoded), and every table it makes rendered as a table;
* the math typeset: MathJax finished without a TeX error, no raw `$$`, `\\(`, `\\[` or `$...\\cmd...$` left in the text
  (outside code), and MathJax nodes present where the notebook has math;
* every link of the navigation resolves (HTTP 200), and the navigation links every page.

It prints a table, one row per page, saves a full-page screenshot of each into `SITE/screenshots/`, and exits with status 1 on
any failure. `--self-test` first runs the same checks on small pages made to fail each one (a broken image, a CDN script, raw
math, a console error, a dead navigation link, a missing figure and table) and fails unless each is caught. `--shot` saves a viewport screenshot of a page
scrolled to an element (the README's screenshots are made this way).
"""
from __future__ import annotations
import argparse, base64, functools, json, re, shutil, sys, tempfile, threading, time, urllib.request, zlib, struct
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urljoin, urlparse

RAW_MATH = re.compile(r'\$\$|\\\(|\\\)|\\\[|\\\]|\\begin\{|(?<![\w$])\$[^$\n]*\\[a-zA-Z]+[^$\n]*\$')

def serve(root: Path) -> tuple[ThreadingHTTPServer, str]:
    "A quiet static server for `root` on a free port of 127.0.0.1; the server and its base URL."
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    class Server(ThreadingHTTPServer):
        def handle_error(self, request, address):  # a page left before a file was sent: not the site's fault
            if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)): super().handle_error(request, address)
    server = Server(('127.0.0.1', 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"

def browser(width: int = 1280, height: int = 1000):
    "Headless Debian Chromium under Selenium, logging the console and the network; no host but 127.0.0.1 resolves."
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    driver = shutil.which('chromedriver')
    if not (chromium and driver):
        sys.exit("docs/check.py needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', f'--window-size={width},{height}',
              '--hide-scrollbars', '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1', '--disable-background-networking',
              '--disable-component-update', '--disable-default-apps', '--disable-extensions', '--disable-sync', '--no-first-run',
              '--disable-features=Translate,MediaRouter,OptimizationHints'):
        opts.add_argument(a)
    opts.set_capability('goog:loggingPrefs', {'browser': 'ALL', 'performance': 'ALL'})
    return webdriver.Chrome(options=opts, service=Service(executable_path=driver))

WAIT_MATH = """const done = arguments[arguments.length - 1];
if (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) return done('none');
MathJax.startup.promise.then(() => done('ok'), e => done('error: ' + e));"""

DECODE_IMAGES = """const done = arguments[arguments.length - 1];
const imgs = Array.from(document.images);
imgs.forEach(i => { i.loading = 'eager'; });
Promise.all(imgs.map(i => i.decode().catch(() => null))).then(() =>
  done(imgs.map(i => ({src: i.currentSrc || i.src, width: i.naturalWidth}))));"""

PAGE_FACTS = """const text = document.body.cloneNode(true);
text.querySelectorAll('pre, code, script, style, textarea, mjx-container, .highlight').forEach(e => e.remove());
const nav = Array.from(document.querySelectorAll('.sidebar-tree a, nav a')).map(a => a.href);
const figures = Object.fromEntries(Array.from(document.querySelectorAll('figure[id]')).map(f =>
  [f.id, Math.max(0, ...Array.from(f.querySelectorAll('img')).map(i => i.naturalWidth))]));
const rows = id => { const e = document.getElementById(id), t = e && e.nextElementSibling && e.nextElementSibling.querySelector('table');
                     return t ? t.rows.length : 0; };
return {text: text.innerText, math: document.querySelectorAll('mjx-container').length,
        display: document.querySelectorAll('mjx-container[display="true"]').length,
        errors: document.querySelectorAll('mjx-merror, [data-mjx-error]').length, nav: Array.from(new Set(nav)), figures: figures,
        tables: Object.fromEntries((arguments[0] || []).map(id => [id, rows(id)]))};"""

def network(entries: list[dict]) -> tuple[list[str], list[str]]:
    "From Chromium's performance log: every URL requested, and every failed request."
    urls, failed, by_id = [], [], {}
    for e in entries:
        m = json.loads(e['message'])['message']
        p = m.get('params', {})
        if m['method'] == 'Network.requestWillBeSent':
            by_id[p['requestId']] = p['request']['url']; urls.append(p['request']['url'])
        elif m['method'] == 'Network.responseReceived' and p['response']['status'] >= 400:
            failed.append(f"HTTP {p['response']['status']} {p['response']['url']}")
        elif m['method'] == 'Network.loadingFailed' and not p.get('canceled'):
            failed.append(f"{p.get('errorText')} {by_id.get(p['requestId'], p['requestId'])}")
    return urls, failed

def check_page(driver, base: str, page: dict, all_pages: list[str], nav_ok: dict, shots: Path | None) -> dict:
    "Load one page and check it; the numbers seen and the problems found."
    driver.get_log('browser'), driver.get_log('performance')  # start from empty logs
    driver.get(urljoin(base, page['page']))
    mathjax = driver.execute_async_script(WAIT_MATH)
    images = driver.execute_async_script(DECODE_IMAGES)
    time.sleep(0.2)
    facts = driver.execute_script(PAGE_FACTS, page.get('tables', []))
    problems = [f"console: {e['message'][:200]}" for e in driver.get_log('browser') if e['level'] == 'SEVERE']
    urls, failed = network(driver.get_log('performance'))
    host = urlparse(base).netloc
    problems += [f"failed request: {f[:200]}" for f in failed]
    problems += [f"request to another host: {u[:200]}" for u in urls
                 if urlparse(u).scheme in ('http', 'https', 'ws', 'wss') and urlparse(u).netloc != host]
    problems += [f"image not decoded: {i['src'][:200]}" for i in images if not i['width']]
    problems += [f"figure #{f} is not on the page, or its image is not decoded" for f in page.get('figures', [])
                 if not facts['figures'].get(f)]
    problems += [f"table #{t} is not on the page as a table" for t in page.get('tables', []) if facts['tables'].get(t, 0) < 2]
    if mathjax.startswith('error'): problems.append(f"MathJax: {mathjax}")
    if facts['errors']: problems.append(f"{facts['errors']} math expression(s) with a TeX error")
    raw = sorted({m.group(0)[:40] for m in RAW_MATH.finditer(facts['text'])})
    if raw: problems.append(f"raw math left in the text: {raw[:5]}")
    if page.get('math') and not facts['math']: problems.append(f"the notebook has math ({page['math']}) but nothing was typeset")
    for url in (u for u in facts['nav'] if urlparse(u).netloc == host):
        if url.split('#')[0] not in nav_ok:
            try: nav_ok[url.split('#')[0]] = urllib.request.urlopen(url.split('#')[0], timeout=10).status
            except Exception as e: nav_ok[url.split('#')[0]] = f"{type(e).__name__}: {e}"
        if nav_ok[url.split('#')[0]] != 200: problems.append(f"navigation link {url} does not resolve: {nav_ok[url.split('#')[0]]}")
    linked = {Path(urlparse(u).path).name or 'index.html' for u in facts['nav']}
    problems += [f"page {p} is not linked from the navigation" for p in all_pages if p != page['page'] and p not in linked
                 and p != 'index.html']
    if shots:
        shots.mkdir(parents=True, exist_ok=True); full_page(driver, shots/f"{Path(page['page']).stem}.png")
    return dict(page=page['page'], images=len(images), figures=len(facts['figures']), tables=len(page.get('tables', [])),
                math=facts['math'], display=facts['display'], nav=len(facts['nav']), problems=problems)

def full_page(driver, path: Path, max_height: int = 16000):
    "A screenshot of the whole page (up to `max_height` CSS pixels)."
    size = driver.execute_cdp_cmd('Page.getLayoutMetrics', {})['cssContentSize']
    clip = dict(x=0, y=0, width=size['width'], height=min(size['height'], max_height), scale=1)
    shot = driver.execute_cdp_cmd('Page.captureScreenshot', dict(format='png', captureBeyondViewport=True, clip=clip))
    path.write_bytes(base64.b64decode(shot['data']))

def check_site(site: Path, shots: Path | None, driver=None) -> list[dict]:
    "Check every page of `pages.json` in `site`; one row per page."
    pages = json.loads((site/'pages.json').read_text())['pages']
    server, base = serve(site)
    own = driver is None
    driver = driver or browser()
    try:
        nav_ok = {}
        return [check_page(driver, base, p, [q['page'] for q in pages], nav_ok, shots) for p in pages]
    finally:
        if own: driver.quit()
        server.shutdown()

def table(rows: list[dict]) -> str:
    cols = ('images', 'figures', 'tables', 'math', 'display', 'nav')
    out = [f"{'page':<26}" + ''.join(f"{c:>8}" for c in cols) + '  result']
    for r in rows:
        out.append(f"{r['page']:<26}" + ''.join(f"{r[c]:>8}" for c in cols) + '  '
                   + ('ok' if not r['problems'] else f"{len(r['problems'])} problem(s)"))
        out += [f"    - {p}" for p in r['problems']]
    bad, total = sum(bool(r['problems']) for r in rows), {c: sum(r[c] for r in rows) for c in cols}
    out.append(f"{len(rows)} pages: {total['images']} images ({total['figures']} figures) decoded, {total['tables']} table(s), "
               f"{total['math']} math blocks typeset ({total['display']} displayed); {len(rows) - bad} ok, {bad} failed")
    return '\n'.join(out)

def screenshot(driver, base: str, target: str, out: Path):
    "A viewport screenshot of `target` (PAGE#ID), scrolled so that the element with that id is at the top."
    page, _, anchor = target.partition('#')
    driver.get(urljoin(base, page))
    driver.execute_async_script(WAIT_MATH); driver.execute_async_script(DECODE_IMAGES)
    if anchor and not driver.execute_script(  # instantly: the theme scrolls smoothly
            f"const e = document.getElementById({json.dumps(anchor)}); if (!e) return false; "
            "window.scrollTo({top: e.getBoundingClientRect().top + window.scrollY - 10, behavior: 'instant'}); return true;"):
        sys.exit(f"--shot: no element with id {anchor!r} on {page}")
    time.sleep(0.3)
    out.parent.mkdir(parents=True, exist_ok=True); driver.save_screenshot(str(out))
    print(f"screenshot: {out} ({target})")

# ## Self-test: pages made to fail, each of which must be caught

def png(w=4, h=3) -> bytes:
    "A small valid grey PNG."
    chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    raw = b''.join(b'\x00' + b'\x80' * w for _ in range(h))
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 0, 0, 0, 0)) + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b'')

SELF_TEST = {  # page -> (body, the problem that must be found; None: none at all)
    'good.html': ('<figure id="f"><img src="f.png"></figure>', None),
    'broken_image.html': ('<img src="missing.png">', 'image not decoded'),
    'cdn.html': ('<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script>', 'request to another host'),
    'raw_math.html': ('<p>The loss $$E(\\theta)$$ and \\(h\\) were never typeset.</p>', 'raw math left'),
    'console.html': ('<script>console.error("boom")</script>', 'console'),
    'dead_nav.html': ('<nav><a href="nowhere.html">a page that is not there</a></nav>', 'does not resolve'),
    'missing_figure.html': ('<p id="t">Table 1 should follow, and Figure g.</p><p>But neither does.</p>', 'is not on the page'),
}

def self_test(driver) -> bool:
    "Run the checks on `SELF_TEST`'s pages; True when the good page passes and each bad one fails for its reason."
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        (site/'f.png').write_bytes(png())
        nav = ''.join(f'<a href="{p}">{p}</a>' for p in SELF_TEST)
        for name, (body, _) in SELF_TEST.items():
            (site/name).write_text(f'<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">'
                                   f'<title>{name}</title></head><body><nav class="sidebar-tree">{nav}</nav>{body}</body></html>')
        pages = [dict(page=p, math=int(p == 'raw_math.html'), figures={'good.html': ['f'], 'missing_figure.html': ['g']}.get(p, []),
                      tables=['t'] if p == 'missing_figure.html' else []) for p in SELF_TEST]
        (site/'pages.json').write_text(json.dumps(dict(pages=pages)))
        rows = {r['page']: r for r in check_site(site, None, driver)}
    ok = True
    for name, (_, expect) in SELF_TEST.items():
        got = rows[name]['problems']
        caught = not got if expect is None else any(expect in p for p in got)
        ok &= caught
        print(f"self-test {name:<20} {'ok' if caught else 'NOT CAUGHT'}: {'; '.join(got)[:150] or 'no problem'}")
    return ok

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('site', nargs='?', default='_docs', help='the built site (default: _docs)')
    p.add_argument('--self-test', action='store_true', help='first check that pages made to fail do fail')
    p.add_argument('--shot', action='append', default=[], metavar='PAGE#ID=FILE', help='also save a screenshot scrolled to #ID')
    a = p.parse_args(argv)
    site = Path(a.site)
    if not (site/'pages.json').is_file(): sys.exit(f"{site}/pages.json not found: build the site first (make docs)")
    driver = browser()
    try:
        if a.self_test and not self_test(driver): print("self-test FAILED: a broken page went unnoticed"); return 1
        t0 = time.perf_counter()
        rows = check_site(site, site/'screenshots', driver)
        print(table(rows) + f"\nchecked in {time.perf_counter() - t0:.0f} s; screenshots in {site/'screenshots'}")
        if a.shot:
            server, base = serve(site)
            driver.set_window_size(1280, 1300)
            for s in a.shot:
                target, _, out = s.partition('=')
                screenshot(driver, base, target, Path(out))
            server.shutdown()
    finally: driver.quit()
    return int(any(r['problems'] for r in rows))

if __name__ == '__main__':
    sys.exit(main())
