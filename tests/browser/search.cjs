// Drives facematch's search page in Debian's chromium, as a person would: upload a photo, wait
// for the search to finish, read the grid. Prints one JSON object for tests/browser.rs to check.
// Usage: NODE_PATH=.local/node/node_modules node search.cjs BASE_URL PHOTO SCREENSHOT
// (CommonJS: NODE_PATH finds the playwright-core that `make setup` installed under .local/.)
"use strict";
const { chromium } = require("playwright-core");

async function main() {

  const [base, photo, screenshot] = process.argv.slice(2);
  const consoleErrors = [];
  const statusesSeen = [];
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    // Root in a VM: chromium's sandbox needs user namespaces the test machine may not give.
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    page.on("console", (message) => {
      if (message.type() === "error") consoleErrors.push(message.text());
    });
    page.on("pageerror", (error) => consoleErrors.push(String(error)));
    page.on("response", (response) => {
      if (response.status() >= 400) consoleErrors.push(`${response.status()} ${response.url()}`);
    });

    await page.goto(base + "/");
    await page.setInputFiles("input[name=photo]", photo);
    await page.selectOption("select[name=method]", "euclidean");
    await page.fill("input[name=max_results]", "8");
    await Promise.all([page.waitForURL(/\/searches\/\d+$/), page.click("button[type=submit]")]);
    // The status the page showed when it first rendered, then after it followed the events.
    statusesSeen.push(await page.textContent("#status"));
    await page.waitForSelector("[data-status=FINISHED]", { timeout: 60000 });
    statusesSeen.push(await page.textContent("#status"));
    await page.waitForSelector("#results .card img");
    // Every crop has loaded and decoded (a broken image has naturalWidth 0).
    await page.waitForFunction(() =>
      [...document.querySelectorAll("#results .card img")].every((img) => img.complete && img.naturalWidth > 0),
    );
    const cards = await page.$$eval("#results .card", (cards) =>
      cards.map((card) => ({
        face: Number(card.getAttribute("data-face-id")),
        photo: card.querySelector(".who.muted").getAttribute("title"),
        score: card.querySelector(".score").textContent.trim(),
        cropWidth: card.querySelector("img").naturalWidth,
      })),
    );
    const queryCrop = await page.$eval(".query img", (img) => img.naturalWidth);
    await page.screenshot({ path: screenshot, fullPage: true });
    console.log(JSON.stringify({ url: page.url(), statusesSeen, cards, queryCrop, consoleErrors }));
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
