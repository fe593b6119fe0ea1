// The worker's page of the ConvAI2-style live chat: onboarding check, a persona, N turns of
// chat with a model, then the final questions.  Built on bootstrap-chat's ChatApp (which
// runs mephisto-task's live connection); everything task-specific is in this folder.
import React from "react";
import ReactDOM from "react-dom";
import "bootstrap/dist/css/bootstrap.min.css";
import "bootstrap-chat/styles.css";
import "./style.css";
import { ChatApp, ChatMessage, DoneResponse, INPUT_MODE } from "bootstrap-chat";
import { SidePane } from "./SidePane.jsx";
import { ChatInput } from "./ChatInput.jsx";
import { FinalQuestions } from "./FinalQuestions.jsx";
import { Onboarding } from "./Onboarding.jsx";

function speakerOf(message, mephistoContext, appContext) {
  const names = appContext.taskContext.currentAgentNames || {};
  if (message.id === mephistoContext.agentId || message.id in names) return "worker";
  return message.id === "Coordinator" ? "coordinator" : "partner";
}

const LABELS = { worker: "You", partner: "Your partner", coordinator: "Coordinator" };

function renderMessage({ message, idx, mephistoContext, appContext }) {
  if (!message.text) return null;
  const speaker = speakerOf(message, mephistoContext, appContext);
  return (
    <div key={message.update_id || idx} className={"turn turn-" + speaker} data-speaker={speaker}>
      <ChatMessage isSelf={speaker === "worker"} agentName={LABELS[speaker]} message={message.text} />
    </div>
  );
}

function renderResponse({ onMessageSend, inputMode, appContext }) {
  const { taskContext, onTaskComplete } = appContext;
  if (inputMode === INPUT_MODE.DONE || inputMode === INPUT_MODE.INACTIVE) {
    return (
      <div className="right-bottom-pane" id="done-pane">
        <DoneResponse
          onTaskComplete={onTaskComplete}
          onMessageSend={onMessageSend}
          doneText={taskContext.doneText || null}
          isTaskDone={taskContext.task_done || null}
        />
      </div>
    );
  }
  const active = inputMode === INPUT_MODE.READY_FOR_INPUT;
  let pane;
  if (taskContext.onboarding) {
    pane = <Onboarding onboarding={taskContext.onboarding} active={active} onMessageSend={onMessageSend} />;
  } else if (taskContext.final_questions) {
    pane = <FinalQuestions questions={taskContext.final_questions} active={active} onMessageSend={onMessageSend} />;
  } else {
    pane = <ChatInput taskContext={taskContext} active={active} onMessageSend={onMessageSend} />;
  }
  return <div className="right-bottom-pane">{pane}</div>;
}

function renderSidePane({ mephistoContext, appContext }) {
  return <SidePane taskConfig={mephistoContext.taskConfig} taskContext={appContext.taskContext} />;
}

ReactDOM.render(
  <ChatApp
    renderMessage={renderMessage}
    renderSidePane={renderSidePane}
    renderResponse={renderResponse}
    defaultAppSettings={{ volume: 0 }}
  />,
  document.getElementById("app")
);
