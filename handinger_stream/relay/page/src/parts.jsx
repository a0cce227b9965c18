import { getToolName, isToolUIPart } from 'ai';

export function Message({ message }) {
  return (
    <article className="message" data-role={message.role} data-id={message.id}>
      {groupSources(message.parts).map((part, index) => (
        <Part key={index} part={part} />
      ))}
    </article>
  );
}

// Consecutive sources read better as one list than as a run of separate blocks.
function groupSources(parts) {
  const out = [];
  for (const part of parts) {
    const isSource = part.type === 'source-url' || part.type === 'source-document';
    const last = out[out.length - 1];
    if (isSource && last?.type === 'sources') last.items.push(part);
    else if (isSource) out.push({ type: 'sources', items: [part] });
    else out.push(part);
  }
  return out;
}

function Part({ part }) {
  if (part.type === 'text') {
    return <div className={part.state === 'streaming' ? 'text streaming' : 'text'}>{part.text}</div>;
  }
  if (part.type === 'reasoning') return <Reasoning part={part} />;
  if (part.type === 'sources') return <Sources items={part.items} />;
  if (part.type === 'file') return <File part={part} />;
  if (isToolUIPart(part)) return <Tool part={part} />;
  // step-start and data-* parts carry nothing a reader needs.
  return null;
}

function Reasoning({ part }) {
  const streaming = part.state === 'streaming';
  return (
    <details className="reasoning">
      <summary>
        {streaming ? 'Thinking…' : 'Reasoning'}
        <span className="preview">{part.text}</span>
      </summary>
      <div className="reasoning-text">{part.text}</div>
    </details>
  );
}

const TOOL_STATES = {
  'input-streaming': 'preparing',
  'input-available': 'running',
  'approval-requested': 'awaiting approval',
  'approval-responded': 'approved',
  'output-available': 'done',
  'output-error': 'failed',
  'output-denied': 'denied',
};

function Tool({ part }) {
  const input = part.input === undefined ? '' : JSON.stringify(part.input);
  return (
    <div className="tool" data-tool={getToolName(part)} data-state={part.state}>
      <span className="tool-name">{getToolName(part)}</span>
      <span className="tool-state">{TOOL_STATES[part.state] ?? part.state}</span>
      {input && <span className="tool-input">{input}</span>}
      {part.errorText && <span className="tool-error">{part.errorText}</span>}
    </div>
  );
}

function Sources({ items }) {
  return (
    <ul className="sources">
      {items.map((source) =>
        source.type === 'source-url' ? (
          <li key={source.sourceId}>
            <a href={source.url} target="_blank" rel="noreferrer noopener">
              {source.title || source.url}
            </a>
          </li>
        ) : (
          <li key={source.sourceId}>{source.title || source.filename}</li>
        ),
      )}
    </ul>
  );
}

function File({ part }) {
  const name = part.filename || fileName(part.url);
  return (
    <a className="file" href={part.url} target="_blank" rel="noreferrer noopener" download={name}>
      {name} <span className="media-type">{part.mediaType}</span>
    </a>
  );
}

function fileName(url) {
  if (url.startsWith('data:')) return 'attachment';
  const last = url.split(/[?#]/)[0].split('/').pop();
  try {
    return decodeURIComponent(last) || 'file';
  } catch {
    return last || 'file';
  }
}
