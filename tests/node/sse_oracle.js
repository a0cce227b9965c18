// Reads a JSON array of streams (each a list of text chunks) on stdin and
// writes, for each, the events npm's eventsource-parser dispatches.
const { createParser } = require("eventsource-parser");

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (d) => (input += d));
process.stdin.on("end", () => {
  const results = JSON.parse(input).map((chunks) => {
    const events = [];
    const parser = createParser({ onEvent: (e) => events.push(e) });
    for (const chunk of chunks) parser.feed(chunk);
    return events;
  });
  process.stdout.write(JSON.stringify(results));
});
