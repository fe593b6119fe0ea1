import React from "react";

// Instructions, the worker's own persona and how many turns are left.
export function SidePane({ taskConfig, taskContext }) {
  const persona = taskContext.worker_persona || [];
  const done = taskContext.turns_done || 0;
  const needed = taskContext.num_turns || taskConfig.num_turns;
  return (
    <div className="side-pane-content">
      <h2>{taskConfig.task_title || "Chat with a partner"}</h2>
      <div dangerouslySetInnerHTML={{ __html: taskConfig.task_description || "" }} />
      {persona.length > 0 ? (
        <div className="panel panel-info" id="worker-persona">
          <div className="panel-heading">Your character</div>
          <ul className="list-group">
            {persona.map((line, i) => (
              <li className="list-group-item" key={i}>{line}</li>
            ))}
          </ul>
        </div>
      ) : null}
      {needed && !taskContext.onboarding ? (
        <p id="turn-counter">
          Messages sent: <b>{Math.min(done, needed)}</b> of <b>{needed}</b>
        </p>
      ) : null}
    </div>
  );
}
