// Drives the shopper page in headless Chromium through a whole waiting-room sale: waits out the
// countdown, joins the queue (solving the proof-of-work in the page's Web Worker), waits to be
// admitted, buys, pays. Prints one JSON line with the order id and what the page measured; on any
// failure saves a screenshot and exits 1. Run by tests/shop_page.rs.
//
//   node shop.mjs <base url> <sku> <shopper token> <payment token> <screenshot path>
//
// PLAYWRIGHT_DIR names the directory whose node_modules holds playwright-core; CHROMIUM the
// browser (default /usr/bin/chromium).
import { createRequire } from 'node:module';

const require = createRequire(`${process.env.PLAYWRIGHT_DIR || process.cwd()}/`);
const { chromium } = require('playwright-core');

const [base, sku, token, payToken, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox'],
});
// A phone-sized viewport: the page must work there.
const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
page.on('console', (message) => console.error(`page console: ${message.text()}`));
page.on('pageerror', (error) => console.error(`page error: ${error.message}`));
try {
  await page.goto(`${base}/shop/${sku}#token=${token}&pay=${payToken}`);
  // The countdown runs on the server's clock before the start.
  await page.getByText(/^Starts in \d/).waitFor({ timeout: 30000 });
  const countdown = await page.locator('#countdown').textContent();
  const join = page.getByRole('button', { name: 'Join the queue' });
  await join.click({ timeout: 60000 });
  const buy = page.getByRole('button', { name: 'Buy' });
  await buy.click({ timeout: 120000 });
  await page.getByText('Bought!').waitFor({ timeout: 60000 });
  await page.getByRole('button', { name: 'Pay' }).click({ timeout: 30000 });
  await page.getByText('Paid. Thank you!').waitFor({ timeout: 60000 });
  const orderId = await page.locator('#order-id').textContent();
  const status = await page.locator('#order-status').textContent();
  const measured = await page.evaluate(() => ({ ...document.body.dataset }));
  console.log(JSON.stringify({ orderId, status, countdown, ...measured }));
} catch (error) {
  await page.screenshot({ path: screenshot, fullPage: true }).catch(() => {});
  console.error(`the page failed (screenshot: ${screenshot}): ${error.stack || error}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
